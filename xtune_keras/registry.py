"""One registry mechanism for every extension point: heads, losses, datasets, adversarial methods,
optimizers and sweep backends (after allennlp's ``Registrable``).

Adding a component is one function (or class), one ``register`` line and one test::

    HEADS = Registry("head", skip=("x", "mask", "name"))

    @HEADS.register("bigru")
    def bigru_head(x, mask, name, units=128): ...

A component's options are its keyword arguments (read from the signature, ``skip`` left out), or
the ``options`` mapping given to ``register``; ``checks`` maps an option to ``(predicate, text)``.
Every lookup error is one line naming where (``model.heads[1].type``) and the valid choices.
"""
import inspect

from xtune_keras.errors import XtuneError


class Registry:
    def __init__(self, kind, skip=()):
        self.kind = kind
        self.skip = tuple(skip) + ("self",)
        self._entries = {}

    def register(self, name, component=None, options=None, checks=None, **info):
        """Register ``component`` under ``name``; without it, a decorator. ``info``: anything the
        caller wants back with :meth:`info` (e.g. an optimizer's defaults)."""
        def add(component):
            if name in self._entries:
                raise ValueError("%s %r is registered twice" % (self.kind, name))
            self._entries[name] = {"component": component, "options": options, "checks": checks or {},
                                   "info": info}
            return component

        return add if component is None else add(component)

    def names(self):
        return list(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __getitem__(self, name):
        return self.get(name)

    def items(self):
        return [(name, entry["component"]) for name, entry in self._entries.items()]

    def values(self):
        return [entry["component"] for entry in self._entries.values()]

    def valid(self):
        return ", ".join(self._entries)

    def _entry(self, name, where):
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            prefix = "%s: " % where if where else ""
            raise XtuneError("%sunknown %s %r; valid: %s" % (prefix, self.kind, name, self.valid())) from None

    def get(self, name, where=None):
        """The registered component, or a one-line error listing the valid names."""
        return self._entry(name, where)["component"]

    def info(self, name, where=None):
        return self._entry(name, where)["info"]

    def options(self, name, where=None):
        """``{option: default}`` of a component: its declared options, or its keyword arguments."""
        entry = self._entry(name, where)
        if entry["options"] is not None:
            return dict(entry["options"])
        component = entry["component"]
        target = component.__init__ if inspect.isclass(component) else component
        params = inspect.signature(target).parameters.values()
        return {p.name: p.default for p in params
                if p.name not in self.skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def check_options(self, name, given, where, coerce=None):
        """``given`` checked: a one-line error for an option ``name`` does not take, or a value
        out of range; ``coerce(value, key, where)`` first turns each value into its type."""
        valid = self.options(name, where)
        checks = self._entry(name, where)["checks"]
        for key in given:
            if key not in valid:
                raise XtuneError("%s: unknown option %r for %s %r; valid: %s"
                                 % (where, key, self.kind, name, ", ".join(valid) or "(none)"))
        checked = {}
        for key, value in given.items():
            checked[key] = coerce(value, key, where) if coerce else value
            if key in checks:
                ok, expected = checks[key]
                if not ok(checked[key]):
                    raise XtuneError("%s.%s must be %s (got %r)" % (where, key, expected, value))
        return checked
