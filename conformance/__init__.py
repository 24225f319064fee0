"""The conformance harness: cases, tolerances, comparison, runner, reports and the CLI."""
