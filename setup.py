"""specdec: exact speculative decoding for T5 in JAX/Flax."""

import setuptools

SEQIO = ["seqio>=0.0.19"]

setuptools.setup(
    name="specdec",
    version="0.1.0",
    description="Exact speculative decoding (Leviathan et al., ICML 2023) for T5 in JAX/Flax, "
                "mirroring T5X.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["specdec", "specdec.*"]),
    package_data={"specdec": ["assets/**/*"]},
    include_package_data=True,
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "safetensors>=0.4.5",  # hf_import; >=0.4.5 reads bfloat16 into numpy (via ml_dtypes)
        "optax>=0.2",
        "orbax-checkpoint>=0.5",
        "gin-config>=0.5",
        "absl-py",
        "numpy",
        "sentencepiece",
        "tensorstore",
        "sacrebleu>=2",
        "rouge-score",
        "tqdm",
        "tensorboardX",
        "matplotlib",
    ],
    extras_require={
        # seqio (and through it tensorflow, ~2 GB) only for the seqio tasks (specdec.tasks) and
        # scripts/infer.py; the core, the demo and scripts/translate.py never import them.
        "seqio": SEQIO,
        "test": ["pytest", "pytest-xdist", "scipy", "nbclient", "nbformat", "ipykernel"] + SEQIO,
        # Never leave torch unpinned: an unpinned torch pulls a multi-GB CUDA build.
        "peer": ["torch==2.13.0", "transformers>=4.57,<4.58"],
    },
)
