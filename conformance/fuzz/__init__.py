"""Property-based fuzzing of every implementation against the spec, with Hypothesis.

``python -m conformance.fuzz --backend B --loss L --examples N`` (later
``lossparity fuzz``) draws N examples per loss from ``strategies.STRATEGIES``.
They are valid inputs of the loss's domain: shapes with empty and size-1
axes, the dtypes float64, float32, bfloat16 and float16, every option and
reduction, huge and tiny magnitudes, ties, masks and ignored rows. Each
example runs through every mirror and native of backend B for loss L in eager
mode (compiled with ``--compiled``) and is checked exactly as a conformance
run checks a case (``conformance.worker.Worker``): same reference, tolerances,
documented differences and known failures.

A failing check is a counterexample. Hypothesis shrinks it, and it is saved as
``conformance/cases/regressions/<loss>/<hash>.npz`` plus ``<hash>.json``
(``regression.py``). ``conformance.cases.cases_for`` returns the saved
counterexamples as cases of the group "regression", so every conformance run
replays them on every backend.

Exit status of the command: 0 when no new counterexample was found, 1 when at
least one was found (and saved), 2 for a usage error. ``--publish`` writes a
summary per backend to ``results/<environment-id>/fuzz/<backend>.json``: per
loss the examples run, counterexamples found and seconds taken, and the replay
of the loss's saved regression cases (passing, known failures, still failing). The tests run a
derandomised, bounded profile; the command runs unbounded ones by default.
"""
