"""Reading T5X model gin files with gin's own parser (`specdec.t5x_gin`).

testdata/t5x/ holds T5X's own `t5_1_1/*.gin` and `t5_1_0/*.gin` (Apache 2.0; see its README.md),
in T5X's folder layout so that their `include 't5x/examples/t5/...'` lines resolve.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from specdec import T5Config, t5x_gin

HERE = os.path.dirname(os.path.abspath(__file__))
T5X_ROOT = os.path.join(HERE, "testdata", "t5x")
T5_DIR = os.path.join(T5X_ROOT, "t5x", "examples", "t5")


def _t5x(version: str, size: str) -> str:
  return os.path.join(T5_DIR, version, f"{size}.gin")


def _config(*, emb_dim, num_heads, num_layers, head_dim, mlp_dim, v1_1):
  return T5Config(vocab_size=32128, emb_dim=emb_dim, num_heads=num_heads,
                  num_encoder_layers=num_layers, num_decoder_layers=num_layers,
                  head_dim=head_dim, mlp_dim=mlp_dim,
                  mlp_activations=("gelu", "linear") if v1_1 else ("relu",),
                  dropout_rate=0.0, logits_via_embedding=not v1_1, dtype="bfloat16")


# (file, the config T5X builds from it). The presets were written from T5X's published sizes;
# here the files themselves are read.
CASES = [
    ("t5_1_1", "small", T5Config.preset("t5_1_1_small")),
    ("t5_1_1", "base", T5Config.preset("t5_1_1_base")),
    ("t5_1_1", "large", T5Config.preset("t5_1_1_large")),
    ("t5_1_1", "xl", T5Config.preset("t5_1_1_xl")),
    ("t5_1_1", "xxl", T5Config.preset("t5_1_1_xxl")),
    ("t5_1_1", "tiny", _config(emb_dim=8, num_heads=4, num_layers=2, head_dim=3, mlp_dim=16,
                               v1_1=True)),
    ("t5_1_0", "small", T5Config.preset("t5_1_0_small")),
    ("t5_1_0", "base", T5Config.preset("t5_1_0_base")),
    ("t5_1_0", "large", _config(emb_dim=1024, num_heads=16, num_layers=24, head_dim=64,
                                mlp_dim=4096, v1_1=False)),
    ("t5_1_0", "3B", _config(emb_dim=1024, num_heads=32, num_layers=24, head_dim=128,
                             mlp_dim=16384, v1_1=False)),
    ("t5_1_0", "11B", _config(emb_dim=1024, num_heads=128, num_layers=24, head_dim=128,
                              mlp_dim=65536, v1_1=False)),
    # T5X's t5_1_0/tiny.gin includes t5_1_1/base.gin (so it is a gated-GELU, untied model).
    ("t5_1_0", "tiny", _config(emb_dim=8, num_heads=4, num_layers=2, head_dim=3, mlp_dim=16,
                               v1_1=True)),
]


@pytest.mark.parametrize("version,size,expected", CASES,
                         ids=[f"{v}/{s}" for v, s, _ in CASES])
def test_t5x_model_gin_files(version, size, expected):
  assert t5x_gin.config_from_gin(_t5x(version, size), DROPOUT_RATE=0.0) == expected


def test_dropout_rate_is_required_by_t5x_model_files():
  # T5X's base.gin says `DROPOUT_RATE = %gin.REQUIRED`: the run's gin file sets it.
  base = _t5x("t5_1_1", "base")
  with open(base) as f:
    line = 1 + next(i for i, text in enumerate(f) if "%gin.REQUIRED" in text)
  with pytest.raises(ValueError, match=rf"base\.gin:{line}: T5Config.dropout_rate needs "
                                       r"DROPOUT_RATE, which the gin files leave "
                                       r"%gin.REQUIRED.*DROPOUT_RATE=\.\.\."):
    t5x_gin.config_from_gin(_t5x("t5_1_1", "small"))
  # A field override needs no macro.
  assert t5x_gin.config_from_gin(_t5x("t5_1_1", "small"), dropout_rate=0.0) == (
      T5Config.preset("t5_1_1_small"))


def test_t5x_run_gin_file(caplog):
  """T5X's base_wmt_infer.gin: imports `__main__`, includes the model file and a run file that is
  not here (skipped with a warning), and defines DROPOUT_RATE after the include."""
  path = os.path.join(T5_DIR, "t5_1_1", "examples", "base_wmt_infer.gin")
  with caplog.at_level(logging.WARNING, logger="specdec.t5x_gin"):
    config = t5x_gin.config_from_gin(path)
  assert config == T5Config.preset("t5_1_1_base")
  assert "t5x/configs/runs/infer.gin" in caplog.text


def _write(tmp_path, name: str, text: str) -> str:
  path = tmp_path / name
  path.write_text(textwrap.dedent(text))
  return str(path)


BASE = """\
    MLP = ('gelu', 'linear')
    network.T5Config:
      vocab_size = 64
      emb_dim = 32
      num_heads = 4
      head_dim = 8
      mlp_dim = 48
      mlp_activations = %MLP
    """


def test_values_macros_references_and_scopes(tmp_path):
  _write(tmp_path, "base.gin", BASE)
  path = _write(tmp_path, "model.gin", """\
      from __gin__ import dynamic_registration
      from t5x.examples.t5 import network
      include 'base.gin'
      LAYERS = %DEPTH    # a macro may name another, defined later
      DEPTH = 3
      network.Transformer.config = @network.T5Config()
      network.T5Config.num_encoder_layers = %LAYERS
      network.T5Config:
        num_decoder_layers = \\
            2
        dtype = @jnp.bfloat16    # a constant under dynamic registration
        dropout_rate = 0
        mlp_dim = 64             # overrides base.gin's 48
      encoder/network.T5Config.emb_dim = 8    # scoped: not the model's config
      MLP = ('relu',
             'linear')           # the macro's last value counts, wherever it is used
      """)
  assert t5x_gin.config_from_gin(path) == T5Config(
      vocab_size=64, emb_dim=32, num_heads=4, num_encoder_layers=3, num_decoder_layers=2,
      head_dim=8, mlp_dim=64, mlp_activations=("relu", "linear"), dropout_rate=0.0,
      dtype="bfloat16")
  # Overrides: a field, and a macro.
  config = t5x_gin.config_from_gin(path, mlp_dim=16, DEPTH=5, dtype="float32")
  assert (config.mlp_dim, config.num_encoder_layers, config.dtype) == (16, 5, "float32")


def test_agrees_with_gin_itself(tmp_path):
  """The same files through gin's full machinery (a stand-in `network.T5Config` registered in a
  fresh process) bind the same values: includes, macros, blocks, later overrides."""
  _write(tmp_path, "base.gin", BASE)
  path = _write(tmp_path, "model.gin", """\
      include 'base.gin'
      DEPTH = 3
      network.T5Config.num_encoder_layers = %DEPTH
      network.T5Config:
        num_decoder_layers = 2
        mlp_dim = 64
        dtype = 'bfloat16'
        dropout_rate = 0.0
      network.T5Config.emb_dim = 16
      MLP = ('relu', 'linear')
      """)
  script = textwrap.dedent(f"""\
      import json, gin
      @gin.configurable("T5Config", module="network")
      def t5config(**kwargs):  # gin calls it with every binding, macros resolved.
        return kwargs
      gin.add_config_file_search_path({str(tmp_path)!r})
      gin.parse_config_file({path!r})
      print(json.dumps(t5config()))
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=120)
  by_gin = json.loads(result.stdout)
  assert len(by_gin) == 10, by_gin
  by_gin["mlp_activations"] = tuple(by_gin["mlp_activations"])
  assert t5x_gin.config_from_gin(path) == T5Config(**by_gin)


@pytest.mark.parametrize("text,line,message", [
    ("network.T5Config:\n  emb_dim = 512\n  num_heads 6\n", 3, "Expected '='"),
    ("network.T5Config.vocab_size = 64\nnetwork.T5Config.mlp_activations = ('gelu',\n", 2,
     "unclosed bracket"),
    ("network.T5Config:\nvocab_size = 64\n", 2, "Expected indentation"),
    ("network.T5Config.vocab_size = jnp.bfloat16\n", 1, "Failed to parse token"),
])
def test_syntax_errors_name_the_file_and_line(tmp_path, text, line, message):
  path = _write(tmp_path, "bad.gin", text)
  with pytest.raises(ValueError, match=rf"Cannot parse gin file .*bad\.gin:{line}: .*{message}"):
    t5x_gin.config_from_gin(path)


@pytest.mark.parametrize("text,message", [
    ("network.T5Config.vocab_size = @network.Vocab()\n",
     r"bad\.gin:1: T5Config.vocab_size = @network.Vocab\(\): configurable references are not "
     "supported"),
    ("A = %B\nB = %A\nnetwork.T5Config.vocab_size = %A\n", "macro %A refers to itself"),
    ("network.T5Config.vocab_size = 64\nnetwork.T5Config.dtype = 'int8'\n",
     r"bad\.gin:2: unsupported T5Config.dtype 'int8'"),
    ("network.T5Config.emb_dim = 64\n", r"bad\.gin: T5Config.vocab_size is not bound"),
    ("network.T5Config.vocab_size = 64\nnetwork.T5Config.float32_attention_logits = True\n",
     r"bad\.gin:2: T5Config.float32_attention_logits is not supported"),
    ("network.T5Config.vocab_size = 64\nnetwork.T5Config.num_heads = 0\n",
     r"bad\.gin: invalid T5Config: T5Config.num_heads must be positive"),
    ("include 'bad.gin'\n", r"bad\.gin includes itself"),
])
def test_value_errors_name_the_file(tmp_path, text, message):
  path = _write(tmp_path, "bad.gin", text)
  with pytest.raises(ValueError, match=message):
    t5x_gin.config_from_gin(path)


def test_argument_errors(tmp_path):
  path = _write(tmp_path, "base.gin", BASE)
  with pytest.raises(ValueError, match=r"unknown override\(s\) \['numheads'\]"):
    t5x_gin.config_from_gin(path, numheads=4)
  with pytest.raises(TypeError, match="path must be a path to a gin file"):
    t5x_gin.config_from_gin(3)
