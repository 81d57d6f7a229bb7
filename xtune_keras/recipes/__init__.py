"""Recipes: a kind of run as named phases over a run folder (``base.Recipe``).

``RECIPES`` maps the config's ``recipe`` key to a recipe class. Fine-tuning is ``finetune``;
further pretraining and multi-task fine-tuning plug in as a new module with a
``@RECIPES.register("name")`` class, imported below."""
from xtune_keras import compat  # noqa: F401  (first: TensorFlow and the bert4keras repairs)
from xtune_keras.registry import Registry

RECIPES = Registry("recipe")


def run_recipe(config, force=False, echo=True, hooks=()):
    """Run (or resume, or skip when finished) the recipe the config names; its result dict."""
    return RECIPES.get(config["recipe"], "recipe")(config, echo=echo, hooks=hooks).run(force=force)


from xtune_keras.recipes import finetune, multitask, pretrain  # noqa: E402,F401  (register the recipes)
