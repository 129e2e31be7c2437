"""The user-facing entry points run end to end: the demo, T5X-style inference, the notebook.

They run on a stand-in pair (tiny random models over the shipped 4k vocabulary) so that these
tests check plumbing quickly; the shipped pair's quality is tested in test_pretrained.py.
"""

import io
import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest

from conftest import load_script
import specdec
from specdec import T5Config, T5Model, decode_fns, decoding, models, pretrained
from specdec.shared_encoder import SharedEncoderConfig, SharedEncoderDraft

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAND_IN = T5Config(vocab_size=4096, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                    num_encoder_layers=1, num_decoder_layers=1)


@pytest.fixture(scope="module")
def stand_in_pair(tmp_path_factory):
  """The shipped pair's layout: a target, a shared-encoder `draft` over its encoder, a small T5
  `draft_small`."""
  root = tmp_path_factory.mktemp("checkpoints")
  target = T5Model.init(STAND_IN, 0)
  target.save(str(root / "ende" / "target"))
  SharedEncoderDraft.from_target(target, SharedEncoderConfig.for_target(STAND_IN, emb_dim=8),
                                 rng=2).save(str(root / "ende" / "draft"))
  T5Model.init(STAND_IN.replace(emb_dim=8), 1).save(str(root / "ende" / "draft_small"))
  return str(root)


@pytest.fixture
def use_stand_in(stand_in_pair, monkeypatch):
  monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", stand_in_pair)
  monkeypatch.setenv("SPECDEC_CHECKPOINT_DIR", stand_in_pair)
  pretrained.load.cache_clear()
  yield stand_in_pair
  pretrained.load.cache_clear()


def _env(stand_in_pair):
  return dict(os.environ, SPECDEC_CHECKPOINT_DIR=stand_in_pair, JAX_PLATFORMS="cpu",
              TF_CPP_MIN_LOG_LEVEL="3")


def test_pretrained_unknown_name_lists_known(use_stand_in):
  with pytest.raises(ValueError, match=r"Unknown pretrained pair 'nope'.*ende"):
    pretrained.load("nope")


def test_demo_runs_and_reports_identical_outputs(stand_in_pair):
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "demo.py"), "--num_sentences=2",
       "--max_decode_len=8", "--repeats=1"],
      capture_output=True, text=True, env=_env(stand_in_pair), timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "greedy outputs identical to the baseline: 2 of 2" in proc.stdout
  assert "speedup" in proc.stdout
  assert "cost model (passes timed inside a jitted loop): c = " in proc.stdout
  assert "measured/predicted" in proc.stdout and "of the loop's own" in proc.stdout
  assert "machine: " in proc.stdout and "load average" in proc.stdout
  assert not proc.stderr.strip(), proc.stderr  # No tensorflow / absl / progress-bar noise.


def test_infer_from_gin_speculative_scores_what_baseline_scores(use_stand_in, tmp_path):
  sys.path.insert(0, os.path.join(REPO, "scripts"))
  try:
    import infer  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  gin.clear_config()
  try:
    infer.gin_utils.parse(
        ["configs/runs/infer.gin"],
        [f"OUTPUT_DIR = '{tmp_path}'", "infer.max_examples = 12", "infer.batch_size = 8",
         "specdec.models.EncoderDecoderModel.max_decode_length = 8"])
    report = infer.infer()  # pylint: disable=no-value-for-parameter
  finally:
    gin.clear_config()
  assert report["decode_fn"] == "speculative_sample"
  assert report["examples"] == 12
  assert report["baseline"]["identical_outputs"]
  assert report["baseline"]["metrics"] == report["metrics"]
  with open(tmp_path / "specdec_ende_test_metrics.json") as f:
    assert json.load(f)["metrics"] == report["metrics"]
  with open(tmp_path / "specdec_ende_test_outputs.jsonl") as f:
    assert len(f.readlines()) == 12


def test_missing_gin_file_is_named():
  from specdec import gin_utils  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="configs/runs/nope.gin"):
    gin_utils.parse(["configs/runs/nope.gin"], [])


def test_gin_flag_rewrite():
  from specdec import gin_utils  # pylint: disable=g-import-not-at-top
  assert gin_utils.rewrite_gin_args(["x", "--gin.MODEL_DIR='/a=b'", "--other=1"]) == [
      "x", "--gin_bindings=MODEL_DIR = '/a=b'", "--other=1"]


def test_encoder_decoder_model_matches_decoders(tiny_target, tiny_draft):
  """predict_batch with either decode function returns the decoders' tokens (T5X contract)."""
  enc = np.array([[3, 4, 5, 1], [6, 7, 1, 0]], np.int32)
  batch = {"encoder_input_tokens": enc, "decoder_input_tokens": np.zeros((2, 6), np.int32)}
  expected = decoding.generate(tiny_target, enc, max_decode_len=6).tokens
  for fn in (decode_fns.temperature_sample,
             lambda **kw: decode_fns.speculative_sample(gamma=2, **kw)):
    model = models.EncoderDecoderModel(tiny_target.config, decode_fn=fn, draft=tiny_draft)
    out = model.predict_batch(tiny_target.params, batch)
    np.testing.assert_array_equal(out, expected)
    all_decodes, _ = model.predict_batch_with_aux(tiny_target.params, batch,
                                                  return_all_decodes=True)
    assert all_decodes.shape == (2, 1, 6)


def test_notebook_executes(stand_in_pair, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("SPECDEC_CHECKPOINT_DIR", stand_in_pair)
  monkeypatch.setenv("MPLBACKEND", "Agg")
  with open(os.path.join(REPO, "notebooks", "quickstart.ipynb")) as f:
    nb = nbformat.read(f, as_version=4)
  # Smaller parameters than the notebook's defaults (right after its parameter cell): this checks
  # that it runs, not its numbers.
  assert nb.cells[2].source.startswith("# Parameters")
  nb.cells.insert(3, nbformat.v4.new_code_cell(
      "NUM_SENTENCES, GAMMAS, MAX_DECODE_LEN, REPEATS, COST_REPEATS = 2, [1, 2], 8, 1, 2"))
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": REPO}})
  client.execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "greedy outputs identical: True" in outputs
  for key in ("'speedup': ", "'predicted': ", "'v': "):
    assert np.isfinite(float(outputs.split(key)[-1].split(",")[0].split("}")[0])), key
  assert "machine: " in outputs and "c = " in outputs


def test_bench_sampling_times_both_draws(tmp_path):
  script = load_script("bench_sampling")
  out = tmp_path / "s.json"
  result = script.main(["--vocab_sizes", "16", "--batch_sizes", "1", "2", "--draws", "3",
                        "--repeats", "1", "--output", str(out)])
  assert json.load(open(out))["rows"] == result["rows"]
  assert [(r["vocab_size"], r["batch"]) for r in result["rows"]] == [(16, 1), (16, 2)]
  for row in result["rows"]:
    assert row["gumbel_over_inverse_cdf"] == pytest.approx(
        row["us_per_draw_gumbel_max"] / row["us_per_draw_inverse_cdf"])
  with pytest.raises(SystemExit):
    script.main(["--draws", "0"])


def test_bench_argmax_times_both_and_checks_equality(tmp_path):
  script = load_script("bench_argmax")
  out = tmp_path / "a.json"
  result = script.main(["--vocab_sizes", "256", "40", "--shapes", "1x1", "2x3", "--steps", "3",
                        "--repeats", "1", "--output", str(out)])
  assert json.load(open(out))["rows"] == result["rows"]
  assert [(r["vocab_size"], r["batch"], r["rows"]) for r in result["rows"]] == [
      (256, 1, 1), (256, 2, 3), (40, 1, 1), (40, 2, 3)]
  for row in result["rows"]:
    assert row["jnp_over_specdec"] == pytest.approx(
        row["us_per_call_jnp_argmax"] / row["us_per_call_specdec"])
  for bad in (["--steps", "0"], ["--shapes", "2"], ["--shapes", "0x1"]):
    with pytest.raises(SystemExit):
      script.main(bad)


def test_loop_overhead_counts_calls_and_checks_tokens(tmp_path):
  script = load_script("loop_overhead")
  target_dir = tmp_path / "target"
  T5Model.init(STAND_IN, 0).save(str(target_dir))
  out = tmp_path / "loop.json"
  result = script.main(["--checkpoint", str(target_dir), "--gammas", "2", "3", "--decode_len",
                        "9", "--source_len", "5", "--repeats", "1", "--output", str(out)])
  assert json.load(open(out))["rows"] == result["rows"]
  for row in result["rows"]:
    # Always right (alpha 1): every pass keeps gamma tokens and adds one.
    assert row["target_calls"] == -(-9 // (row["gamma"] + 1))
    assert row["same_tokens_as_baseline"] and row["alpha_realised"] == 1.0
    assert row["efficiency"] == pytest.approx(row["speedup"] / row["ideal_speedup"])
  for bad in (["--alpha", "1.5"], ["--gammas", "0"], ["--repeats", "0"]):
    with pytest.raises(SystemExit):
      script.main(bad)


def test_loop_overhead_with_a_real_draft(stand_in_pair, tmp_path):
  """--draft: the simulated draft pays a real (shared-encoder) draft's cost, α stays exact, and
  the ideal counts the draft's 2-token catch-up and γ − 1 single steps per iteration."""
  script = load_script("loop_overhead")
  pair = os.path.join(stand_in_pair, "ende")
  result = script.main(["--checkpoint", os.path.join(pair, "target"), "--draft",
                        os.path.join(pair, "draft"), "--gammas", "3", "--decode_len", "8",
                        "--source_len", "5", "--repeats", "1", "--output", ""])
  d1, d2 = result["draft_pass_ms"][1], result["draft_pass_ms"][2]
  assert d1 > 0 and d2 > 0 and result["draft_params"] > 0
  (row,) = result["rows"]
  assert row["same_tokens_as_baseline"] and row["target_calls"] == 2  # ceil(8 / 4).
  assert row["draft_ms_per_iteration"] == pytest.approx(d2 + 2 * d1)
  assert row["overhead_ms_per_iteration"] == pytest.approx(
      row["ms_per_iteration"] - row["pass_ms"] - row["draft_ms_per_iteration"])


def test_check_greedy_parity_passes_and_reports_a_planted_mismatch(stand_in_pair, monkeypatch):
  script = load_script("check_greedy_parity")
  assert script.first_mismatches(np.array([[5, 6, 7], [5, 6, 7]]),
                                 np.array([[5, 6, 7], [5, 9, 8]])) == [(1, 1)]
  paths = ["--target", os.path.join(stand_in_pair, "ende", "target"),
           "--draft", os.path.join(stand_in_pair, "ende", "draft")]
  args = paths + ["--num_sentences", "3", "--batch_size", "2", "--max_decode_len", "6"]
  result = script.main(args)
  assert result["sentences"] == 3 and result["mismatching_sentences"] == 0

  import specdec  # pylint: disable=g-import-not-at-top
  real = specdec.speculative_generate

  def off_by_one_at_position_2(*a, **kw):
    out = real(*a, **kw)
    tokens = np.asarray(out.tokens).copy()
    tokens[0, 2] = (tokens[0, 2] + 1) % 4096
    return out.replace(tokens=tokens)

  monkeypatch.setattr(specdec, "speculative_generate", off_by_one_at_position_2)
  with pytest.raises(SystemExit, match="differ"):
    script.main(args)


# scripts/translate.py: a subprocess for the command line as a user runs it, in-process runs
# (absl flags parsed here) for the input sources and --compare, sharing one set of compiles.
_SENTENCES = ["The file is saved.", "Open the dialog to choose a format."]
_TRANSLATE_ARGS = ["--max_decode_len=8", "--gamma=2"]


def _expected_translations(sentences, draft="draft"):
  pair = pretrained.load("ende")
  script = load_script("translate")
  tokens = script.encode(pair, sentences, max_input_len=512)
  out = specdec.speculative_generate(pair.target, pair.get_draft(draft), tokens, gamma=2,
                                     max_decode_len=8)
  return pair.decode(out.tokens)


def _run_translate(argv, monkeypatch, capsys, stdin=""):
  from absl import flags  # pylint: disable=g-import-not-at-top
  script = load_script("translate")
  monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
  try:
    rest = flags.FLAGS(["translate.py"] + _TRANSLATE_ARGS + argv)
    script.main(rest)
  finally:
    flags.FLAGS.unparse_flags()
  return capsys.readouterr()


def test_translate_command_line_is_quiet_and_light(use_stand_in):
  """Sentences as arguments; stdout holds the translations only, and tensorflow is never
  imported."""
  code = ("import runpy, sys\n"
          f"sys.argv = ['translate.py', *{_TRANSLATE_ARGS + _SENTENCES!r}]\n"
          "try:\n"
          f"  runpy.run_path({os.path.join(REPO, 'scripts', 'translate.py')!r}, "
          "run_name='__main__')\n"
          "except SystemExit as e:\n"
          "  assert not e.code, e.code\n"
          "assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=_env(use_stand_in), timeout=600, check=False, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # A random stand-in rarely ends a sentence within 8 tokens: the only stderr is that warning.
  noise = [line for line in proc.stderr.splitlines()
           if not line.startswith("translate.py: sentence ")]
  assert not noise, proc.stderr
  assert proc.stdout.split("\n")[:-1] == _expected_translations(_SENTENCES)


def test_translate_reads_stdin_and_input_file(use_stand_in, monkeypatch, capsys, tmp_path):
  expected = _expected_translations(_SENTENCES)
  out = _run_translate([], monkeypatch, capsys, stdin="\n".join(_SENTENCES) + "\n\n")
  assert out.out.split("\n")[:-1] == expected
  path = tmp_path / "in.txt"
  path.write_text("\n" + "\n".join(reversed(_SENTENCES)) + "\n")
  out = _run_translate([f"--input_file={path}"], monkeypatch, capsys)
  assert out.out.split("\n")[:-1] == expected[::-1]
  out = _run_translate(["--input_file=-", "--batch_size=1"], monkeypatch, capsys,
                       stdin=_SENTENCES[1])
  assert out.out.split("\n")[:-1] == expected[1:]


def test_translate_compare_reports_identity_alpha_and_machine(use_stand_in, monkeypatch,
                                                              capsys):
  out = _run_translate(["--compare", "--repeats=1", *_SENTENCES], monkeypatch, capsys).out
  expected = _expected_translations(_SENTENCES)
  for i, (src, translation) in enumerate(zip(_SENTENCES, expected)):
    assert f"[{i + 1}] {src}\n  speculative: {translation}\n  baseline:    identical\n" in out
  assert "greedy outputs identical to the baseline: 2 of 2" in out
  for text in ("alpha (acceptance rate, MLE):", "target calls:", "speedup", "machine: ",
               "load average"):
    assert text in out, text


@pytest.mark.parametrize("argv, stdin, message", [
    (["--draft=draft_plain", "x"], "", "no draft 'draft_plain'"),   # The stand-in has one.
    ([], "\n  \n", "no sentences"),
    (["--input_file=/nonexistent/in.txt"], "", "/nonexistent/in.txt"),
    (["--input_file=-", "x"], "", "not both"),
    (["--max_input_len=4", "a longer sentence than four tokens"], "", "max_input_len=4"),
    (["--gamma=0", "x"], "", "gamma"),
])
def test_translate_bad_input_is_named(use_stand_in, monkeypatch, capsys, argv, stdin, message):
  from absl import app  # pylint: disable=g-import-not-at-top
  with pytest.raises(app.UsageError, match=message):
    _run_translate(argv, monkeypatch, capsys, stdin=stdin)
