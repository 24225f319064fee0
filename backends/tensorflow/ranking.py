"""TensorFlow mirrors of the spec's ranking and alignment losses."""

__all__: list[str] = []
