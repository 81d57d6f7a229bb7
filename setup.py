from setuptools import find_packages, setup

setup(
    name="xtune_keras",
    version="0.1.0",
    description="Rerunnable BERT fine-tuning experiments (bert4keras, tf.keras) for text classification",
    packages=find_packages(include=["xtune_keras", "xtune_keras.*"]),
    python_requires=">=3.9",
    # tf-keras and bert4keras are installed with --no-deps by the Makefile: bert4keras declares
    # keras<=2.3.1, which no resolver can satisfy next to TensorFlow 2.21.
    install_requires=["numpy", "pandas", "h5py", "pyyaml", "openpyxl", "matplotlib", "scipy", "safetensors", "jieba"],
    extras_require={"cpu": ["tensorflow-cpu==2.21.*"], "gpu": ["tensorflow==2.21.*"], "ray": ["ray==2.60.*"],
                    "sentencepiece": ["sentencepiece"],
                    "onnx": ["tf2onnx==1.17.0", "onnx", "onnxruntime"], "serve": ["fastapi", "uvicorn"]},
    entry_points={"console_scripts": ["xtune=xtune_keras.cli:main"]},
)
