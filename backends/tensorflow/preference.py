"""TensorFlow mirrors of the spec's preference-optimisation losses."""

__all__: list[str] = []
