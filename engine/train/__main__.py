"""`python -m engine.train`: train a model folder (see engine.train.loop)."""
from engine.train.loop import main

main()
