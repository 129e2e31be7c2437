"""Mutation check: does the test suite catch the bugs it claims to?

Each mutation below changes one line (rarely two) of `specdec/` the way a plausible bug would. For
each, this script writes the mutated file into a temporary copy of the repository, runs the test
files that should notice (`pytest -x`, so it stops at the first failure), and records whether they
failed and which test failed first. Every mutation must be caught; the script exits 1 otherwise.

  python scripts/mutation_check.py                     # every mutation (~30-60 min on 2 cores)
  python scripts/mutation_check.py --only no_zero_residual_fallback generate_one_key
  python scripts/mutation_check.py --list              # the mutations, nothing run
  python scripts/mutation_check.py --baseline          # first check the files pass unmutated

A mutation is (name, file, the exact original text, its replacement, the test files to run, why).
The original text must occur exactly once in the file; `tests/test_mutation_check.py` checks that
in the default test run, so a refactor that moves or rewrites a mutated line fails loudly (update
the entry here) instead of silently disabling the mutation. Not part of the default test run: it
runs the relevant test files once per mutation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mutation(NamedTuple):
  name: str
  path: str          # Relative to the repository root.
  original: str      # Exact text (with indentation); must occur once in the file.
  replacement: str
  tests: tuple[str, ...]  # Test files (or node ids) that should catch it.
  why: str


M = Mutation
MUTATIONS = (
    # --- the audit's four (issue 19) -----------------------------------------------------------
    M("no_zero_residual_fallback", "specdec/verification.py",
      "  residual = jnp.maximum(p_next - q_padded[num_accepted], 0.0)\n"
      "  residual = jnp.where(jnp.sum(residual) > 0, residual, p_next)\n",
      "  residual = jnp.maximum(p_next - q_padded[num_accepted], 0.0)\n",
      ("tests/test_verification.py",),
      "a rejection whose residual rounds to zero draws token V, outside the vocabulary"),
    M("generate_one_key", "specdec/decoding.py",
      "    token = choose(logits[:, 0], sampling_lib.step_keys(keys, state.step), sampling)\n",
      "    token = choose(logits[:, 0], keys, sampling)\n",
      ("tests/test_generate.py",),
      "generate reuses one key at every step: a row's tokens share one uniform"),
    M("loop_keys_reused", "specdec/speculative.py",
      "        sampling_lib.step_keys(row_keys, state.iteration))  # [B, γ+1]\n",
      "        row_keys)  # [B, γ+1]\n",
      ("tests/test_speculative.py",),
      "the speculative loop reuses its keys across iterations"),
    M("eos_ignores_correction", "specdec/speculative.py",
      "    ended |= jnp.any((new == eos_id) & (slot <= num_accepted[:, None]), axis=1)\n",
      "    ended |= jnp.any((new == eos_id) & (slot < num_accepted[:, None]), axis=1)\n",
      ("tests/test_speculative.py",),
      "an EOS drawn as the correction token does not end the row"),
    # --- verification ---------------------------------------------------------------------------
    M("accept_ignores_q", "specdec/verification.py",
      "  kept = (r * q_x < p_x) & proposed\n",
      "  kept = (r < p_x) & proposed\n",
      ("tests/test_verification.py",),
      "x_i kept with probability p(x_i) instead of min(1, p/q)"),
    M("correction_from_p", "specdec/verification.py",
      "  residual = jnp.maximum(p_next - q_padded[num_accepted], 0.0)\n",
      "  residual = p_next\n",
      ("tests/test_verification.py",),
      "the correction drawn from p instead of norm(max(0, p - q))"),
    M("accepted_not_a_prefix", "specdec/verification.py",
      "  num_accepted = jnp.sum(jnp.cumprod(kept.astype(jnp.int32))).astype(jnp.int32)\n",
      "  num_accepted = jnp.sum(kept.astype(jnp.int32)).astype(jnp.int32)\n",
      ("tests/test_verification.py",),
      "counts every kept token, not the kept prefix"),
    M("all_accepted_residual", "specdec/verification.py",
      "  num_accepted = jnp.sum(jnp.cumprod(kept.astype(jnp.int32))).astype(jnp.int32)\n"
      "  q_padded = jnp.concatenate([draft_probs, jnp.zeros_like(draft_probs[:1])], axis=0)\n",
      "  num_accepted = jnp.sum(jnp.cumprod(kept.astype(jnp.int32))).astype(jnp.int32)\n"
      "  q_padded = jnp.concatenate([draft_probs, draft_probs[-1:]], axis=0)\n",
      ("tests/test_verification.py",),
      "after all γ are kept, the next token comes from p_{γ+1} - q_γ instead of p_{γ+1}"),
    M("one_key_for_accept_and_correction", "specdec/verification.py",
      "  accept_key, residual_key = jax.random.split(key)\n"
      "  index = jnp.arange(gamma)\n"
      "  proposed = index < (gamma if num_proposed is None else num_proposed)\n",
      "  accept_key = residual_key = key\n"
      "  index = jnp.arange(gamma)\n"
      "  proposed = index < (gamma if num_proposed is None else num_proposed)\n",
      ("tests/test_verification.py",),
      "the acceptance uniforms and the correction's draw share one key"),
    M("greedy_compares_shifted", "specdec/verification.py",
      "  kept = draft_tokens == target_tokens[:, :-1]\n",
      "  kept = draft_tokens == target_tokens[:, 1:]\n",
      ("tests/test_verification.py",),
      "greedy verification compares x_i with argmax p_{i+1}"),
    # --- sampling -------------------------------------------------------------------------------
    M("draw_strict_cdf", "specdec/sampling.py",
      "  return jnp.sum(cdf <= u).astype(jnp.int32)\n",
      "  return jnp.sum(cdf < u).astype(jnp.int32)\n",
      ("tests/test_sampling.py",),
      "inverse CDF with < : a zero-weight token can be drawn"),
    M("top_k_keeps_k_minus_1", "specdec/sampling.py",
      "    logits = jnp.where(logits >= kth_largest, logits, -jnp.inf)\n",
      "    logits = jnp.where(logits > kth_largest, logits, -jnp.inf)\n",
      ("tests/test_speculative.py",),
      "top-k drops the k-th token (speculative tests only: caught through the loop)"),
    M("temperature_squared", "specdec/sampling.py",
      "  logits = logits.astype(jnp.float32) / temperature\n",
      "  logits = logits.astype(jnp.float32) / temperature ** 2\n",
      ("tests/test_speculative.py",),
      "temperature applied twice, to p and q alike: only an independent reference sees it"),
    M("top_p_not_renormalised", "specdec/sampling.py",
      "    probs = probs / jnp.sum(probs, axis=-1, keepdims=True)\n",
      "    probs = probs\n",
      ("tests/test_speculative.py",),
      "top-p leaves p and q unnormalised: p/q ratios wrong (draws renormalise, the loop not)"),
    M("rows_share_a_key", "specdec/sampling.py",
      "  return jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(batch_size))\n",
      "  return jax.vmap(lambda b: jax.random.fold_in(rng, 0))(jnp.arange(batch_size))\n",
      ("tests/test_decode_fns.py",),
      "every row (and every num_decodes copy) gets the same key"),
    # --- cache ----------------------------------------------------------------------------------
    M("rewind_never_lowers", "specdec/cache.py",
      "    return self.replace(position=position.astype(jnp.int32))\n",
      "    return self.replace(position=jnp.maximum(position, self.position).astype(jnp.int32))\n",
      ("tests/test_model.py",),
      "rolling back does not lower the position: stale entries stay attended"),
    M("write_rows_unchecked", "specdec/cache.py",
      '  check_room(start, block.shape[axis], buffer.shape[axis], what="write")\n',
      "  pass\n",
      ("tests/test_drafts.py",),
      "an eager write past the cache's end clamps silently again"),
    # --- speculative loop -----------------------------------------------------------------------
    M("cache_too_small", "specdec/speculative.py",
      "  cache_length = max_decode_len + 2 * (gamma + 1)\n",
      "  cache_length = max_decode_len + gamma + 1\n",
      ("tests/test_speculative.py",),
      "ended rows write past the caches (silently clamped under jit)"),
    M("draft_not_caught_up", "specdec/proposal.py",
      "  catch_up_from = jnp.maximum(length - 1, 0)\n",
      "  catch_up_from = length\n",
      ("tests/test_speculative.py",),
      "the draft never sees x_γ after a full block: exact still, but fewer tokens accepted"),
    M("rejected_miscounted", "specdec/speculative.py",
      "      rejected=stats.rejected + (num_accepted < proposal.num_proposed) * add)\n",
      "      rejected=stats.rejected + (num_accepted <= proposal.num_proposed) * add)\n",
      ("tests/test_speculative.py",),
      "fully accepted blocks counted as rejections"),
    M("last_draft_token_reuses_first_key", "specdec/proposal.py",
      "  last_token, last_probs = draft_token(logits, None if keys is None else keys[:, gamma - 1],\n",
      "  last_token, last_probs = draft_token(logits, None if keys is None else keys[:, 0],\n",
      ("tests/test_speculative.py",),
      "x_γ drawn with x_1's key: draft tokens not independent draws from q"),
    # --- drafts ---------------------------------------------------------------------------------
    M("lookup_matches_start_token", "specdec/drafts.py",
      "               & (follower > 0) & (end - n + 1 >= 1))  # Never match on the start token.\n",
      "               & (follower > 0))\n",
      ("tests/test_drafts.py",),
      "prompt lookup matches the decoder's start token 0 against padding inside the input"),
    M("lookup_proposes_padding", "specdec/drafts.py",
      "               & (follower > 0) & (end - n + 1 >= 1))  # Never match on the start token.\n",
      "               & (end - n + 1 >= 1))\n",
      ("tests/test_drafts.py",),
      "prompt lookup proposes the padding after a match"),
    M("bigram_no_start_token", "specdec/drafts.py",
      "      seq = np.concatenate([[0], seq[seq > 0]])\n",
      "      seq = seq[seq > 0]\n",
      ("tests/test_drafts.py",),
      "the bigram table misses the 0 → y_1 transition"),
    # --- decoding (generate and the T5X adapters) -----------------------------------------------
    M("decodes_tiled", "specdec/decode_fns.py",
      "  return jnp.repeat(jnp.asarray(tokens), num_decodes, axis=0)\n",
      "  return jnp.tile(jnp.asarray(tokens), (num_decodes, 1))\n",
      ("tests/test_decode_fns.py",),
      "num_decodes copies interleaved across rows instead of grouped by row"),
    M("speculative_sample_drops_topk", "specdec/decode_fns.py",
      "      max_decode_len=max_decode_steps, temperature=temperature, top_k=topk, top_p=topp,\n",
      "      max_decode_len=max_decode_steps, temperature=temperature, top_k=0, top_p=topp,\n",
      ("tests/test_decode_fns.py",),
      "the T5X adapter does not pass topk on"),
    M("num_decodes_zero_allowed", "specdec/decode_fns.py",
      "  if isinstance(num_decodes, bool) or not isinstance(num_decodes, int) or num_decodes < 1:\n",
      "  if isinstance(num_decodes, bool) or not isinstance(num_decodes, int):\n",
      ("tests/test_decode_fns.py",),
      "num_decodes = 0 reaches the decoder"),
    M("generate_ignores_eos", "specdec/decoding.py",
      "    done = state.done if eos_id is None else state.done | (token == eos_id)\n",
      "    done = state.done\n",
      ("tests/test_generate.py",),
      "generate runs on past EOS"),
)


def find(name: str) -> Mutation:
  for mutation in MUTATIONS:
    if mutation.name == name:
      return mutation
  raise ValueError(f"no mutation named {name!r}; --list shows them")


def check_applies(mutation: Mutation, root: str = REPO) -> None:
  """Raises ValueError unless the mutation's original text occurs exactly once in its file."""
  path = os.path.join(root, mutation.path)
  with open(path) as f:
    count = f.read().count(mutation.original)
  if count != 1:
    raise ValueError(f"{mutation.name}: its original text occurs {count} times in {path} "
                     f"(want 1); update the mutation after a refactor:\n{mutation.original}")


def mutated_text(mutation: Mutation, root: str) -> str:
  check_applies(mutation, root)
  with open(os.path.join(root, mutation.path)) as f:
    return f.read().replace(mutation.original, mutation.replacement, 1)


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def first_failure(output: str) -> str | None:
  """The node id of the first failed (or erroring) test in pytest's `-rfE` summary."""
  match = _FAILED.search(output)
  return match.group(1) if match else None


def copy_repo(destination: str) -> None:
  """The parts of the repository the tests import, without caches; assets are linked."""
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "assets")
  for name in ("specdec", "tests", "scripts", "configs"):
    shutil.copytree(os.path.join(REPO, name), os.path.join(destination, name), ignore=ignore)
  os.symlink(os.path.join(REPO, "specdec", "assets"), os.path.join(destination, "specdec", "assets"))
  for name in ("pytest.ini", "setup.py", "README.md"):
    shutil.copy(os.path.join(REPO, name), destination)


def run_tests(root: str, tests: tuple[str, ...], *, workers: int) -> tuple[int, str, float]:
  env = dict(os.environ, PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
  cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *tests]
  if workers > 1:
    cmd += ["-n", str(workers)]
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
  return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--only", nargs="+", default=None, help="Run these mutations only.")
  parser.add_argument("--list", action="store_true", help="List the mutations and exit.")
  parser.add_argument("--baseline", action="store_true",
                      help="First run the test files unmutated (they must pass).")
  parser.add_argument("--workers", type=int, default=1, help="pytest-xdist workers per run.")
  parser.add_argument("--output", default=None, help="Write the results as JSON here.")
  args = parser.parse_args(argv)
  mutations = MUTATIONS if args.only is None else tuple(find(n) for n in args.only)
  if args.list:
    for m in mutations:
      print(f"{m.name:36} {m.path:24} {' '.join(m.tests)}\n{'':36} {m.why}")
    return 0
  for m in mutations:
    check_applies(m)

  results = []
  with tempfile.TemporaryDirectory(prefix="specdec_mutation_") as root:
    copy_repo(root)
    probe = subprocess.run([sys.executable, "-c", "import specdec; print(specdec.__file__)"],
                           cwd=root, env=dict(os.environ, PYTHONPATH=root), capture_output=True,
                           text=True, check=True).stdout.strip()
    if not probe.startswith(root):
      raise RuntimeError(f"the copy does not shadow the installed specdec: {probe}")
    if args.baseline:
      files = tuple(sorted({t for m in mutations for t in m.tests}))
      code, output, seconds = run_tests(root, files, workers=args.workers)
      print(f"baseline ({' '.join(files)}): exit {code} in {seconds:.0f} s", flush=True)
      if code != 0:
        print(output[-3000:])
        return 1
    for m in mutations:
      path = os.path.join(root, m.path)
      with open(path) as f:
        original = f.read()
      mutated = mutated_text(m, root)
      with open(path, "w") as f:
        f.write(mutated)
      try:
        code, output, seconds = run_tests(root, m.tests, workers=args.workers)
      finally:
        with open(path, "w") as f:
          f.write(original)
      caught = code == 1  # Tests failed; 0 = survived; anything else = pytest itself failed.
      status = "caught" if caught else ("SURVIVED" if code == 0 else f"ERROR (exit {code})")
      results.append({"name": m.name, "path": m.path, "status": status,
                      "test": first_failure(output), "seconds": round(seconds, 1),
                      "why": m.why})
      print(f"{m.name:36} {status:9} {results[-1]['test']}  ({seconds:.0f} s)", flush=True)
      if not caught and code != 0:
        print(output[-2000:])

  print("\n| mutation | file | caught? | first failing test |\n|---|---|---|---|")
  for r in results:
    print(f"| {r['name']} | {r['path']} | {r['status']} | {r['test']} |")
  if args.output:
    with open(args.output, "w") as f:
      json.dump({"results": results, "load_average": os.getloadavg()}, f, indent=1)
  return 0 if all(r["status"] == "caught" for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
