"""Sharded checks: vocabulary-parallel cross-entropy and linear cross-entropy against the unsharded spec.

``command.command_sharded(args, *, usage_error) -> int`` runs them. args is an
argparse.Namespace (any object with these attributes; a missing one takes
its default):

- loss: list of "cross_entropy", "linear_cross_entropy" or "all" (entries may
  be comma-separated), or None for both.
- backend: list of "torch", "jax" or "all", or None for both.
- dtype: list of "float32", "bfloat16", "float64" (for debugging) or "all", or
  None for float32 and bfloat16.
- world_size: list of ints >= 1 (or comma-separated strings such as "1,2,4,8"),
  or None for 1, 2, 4 and 8. The JAX job creates at most 8 CPU devices.
- out: folder for sharded.json and sharded.md, or None.
- publish: bool; also write results/<environment id>/sharded.json and sharded.md,
  the id being conformance.environment.describe("cpu")["environment_id"].
- timeout: seconds per world-size job (default 600); a collective fails after
  min(60, timeout) seconds.
- format: "table" (default) or "json", the output on stdout.
- progress: bool or None (None means True): one line on stderr when a job
  starts and when it finishes.
- seed: int >= 0 (default 0).
- command_line: optional str recorded as the command in sharded.md.

It returns 0 when every check passed, was unsupported, or failed only as a
documented difference or a known failure, and 1 when anything failed, raised,
crashed or timed out. It calls usage_error(message) for bad arguments and
expects it to raise. KeyboardInterrupt and SIGTERM end the worker processes
before the KeyboardInterrupt propagates.

``python -m conformance.sharded --help`` runs the same command from the shell.
"""
