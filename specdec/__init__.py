"""specdec: exact speculative decoding for T5 in JAX/Flax (Leviathan, Kalman & Matias, ICML 2023)."""

# First, before anything can start JAX's backends: XLA's CPU dots through Eigen (see
# specdec.xla_cpu; opt out with SPECDEC_XLA_CPU_DEFAULTS=0).
from specdec import xla_cpu as _xla_cpu

_xla_cpu.configure()

from specdec import analysis
from specdec import pretrained
from specdec import simulated
from specdec.cache import DecoderCache
from specdec.config import T5Config
from specdec.decoding import DecodeResult, generate
from specdec.drafts import BigramDraft, Draft, PromptLookupDraft, UnigramDraft
from specdec.loading import load_model
from specdec.model import T5Model
from specdec.sampling import Sampling
from specdec.shared_encoder import SharedEncoderConfig, SharedEncoderDraft
from specdec.simulated import SimulatedDraft, simulate_acceptance
from specdec.speculative import SpeculativeResult, SpeculativeStats, speculative_generate
from specdec.verification import verify, verify_block, verify_greedy

__version__ = "0.1.0"

__all__ = [
    "BigramDraft", "DecodeResult", "DecoderCache", "Draft", "PromptLookupDraft", "Sampling",
    "SharedEncoderConfig", "SharedEncoderDraft", "SimulatedDraft", "SpeculativeResult",
    "SpeculativeStats", "T5Config", "T5Model", "UnigramDraft", "analysis", "generate",
    "load_model", "pretrained", "simulate_acceptance", "simulated",
    "speculative_generate", "verify", "verify_block", "verify_greedy",
]
