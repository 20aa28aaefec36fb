"""Building: the sdist and wheels, matrix cells in builders, repair, images."""
