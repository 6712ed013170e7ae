"""Packaging for sparkvision. Versions are pinned in constraints.txt, not here."""

from __future__ import annotations

from setuptools import find_packages, setup

setup(
    name="sparkvision",
    version="0.1.0",
    description="Spark pipelines for deep vision: ingest, Horovod training, MLflow tracking, batch scoring",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["sparkvision", "sparkvision.*"]),
    package_data={"sparkvision": ["py.typed"]},
    install_requires=[
        "tensorflow-cpu>=2.15,<2.16",
        "horovod[spark]>=0.28,<0.29",
        "pyspark>=3.5,<3.6",
        "petastorm>=0.13,<0.14",
        "pyarrow>=10,<11",
        "numpy>=1.26,<2",
        "pandas>=2.2,<2.3",
        "mlflow>=3.17,<3.18",
        "pillow>=11",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "scipy>=1.10",
        "fsspec>=2023.1",
        "psutil>=5.9",
    ],
    extras_require={"dev": ["pytest>=8", "pytest-xdist>=3.6", "ruff>=0.11", "venv-pack>=0.2", "nbclient>=0.10", "nbformat>=5.10",
                            "ipykernel>=6.29", "scikit-image>=0.22"]},
    entry_points={"console_scripts": ["sparkvision=sparkvision.cli:main"]},
)
