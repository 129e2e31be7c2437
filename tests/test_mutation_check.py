"""scripts/mutation_check.py still applies: every mutation's original text is in today's code.

The mutation run itself is slow (the relevant test files once per mutation) and not part of the
default run; this cheap check catches a refactor that moves or rewrites a mutated line, which
would otherwise silently disable that mutation.
"""

import os

import pytest

from conftest import REPO, load_script


@pytest.fixture(scope="module")
def script():
  return load_script("mutation_check")


def test_every_mutation_applies(script):
  problems = []
  for m in script.MUTATIONS:
    try:
      script.check_applies(m)
    except ValueError as e:
      problems.append(str(e))
  assert not problems, "\n\n".join(problems)


def test_mutations_are_well_formed(script):
  names = [m.name for m in script.MUTATIONS]
  assert len(names) == len(set(names)) and len(names) >= 12
  for m in script.MUTATIONS:
    assert m.replacement != m.original, m.name
    assert m.original.endswith("\n") and m.replacement.endswith("\n"), m.name  # Whole lines.
    assert m.tests and m.why, m.name
    for test in m.tests:
      assert os.path.isfile(os.path.join(REPO, test.split("::")[0])), (m.name, test)
  # The modules the audit asked about are all mutated.
  mutated = {os.path.basename(m.path) for m in script.MUTATIONS}
  assert {"verification.py", "sampling.py", "cache.py", "speculative.py", "drafts.py",
          "decoding.py"} <= mutated


def test_mutated_text_and_failure_parsing(script, tmp_path):
  m = script.MUTATIONS[0]
  os.makedirs(tmp_path / os.path.dirname(m.path))
  (tmp_path / m.path).write_text("before\n" + m.original + "after\n")
  assert script.mutated_text(m, str(tmp_path)) == "before\n" + m.replacement + "after\n"
  (tmp_path / m.path).write_text(m.original * 2)
  with pytest.raises(ValueError, match="occurs 2 times"):
    script.mutated_text(m, str(tmp_path))
  output = ("..F\n=== short test summary info ===\n"
            "FAILED tests/test_x.py::test_a[T=1-3] - AssertionError: p-value 0\n"
            "FAILED tests/test_x.py::test_b - AssertionError\n")
  assert script.first_failure(output) == "tests/test_x.py::test_a[T=1-3]"
  assert script.first_failure("3 passed in 1.0s\n") is None
