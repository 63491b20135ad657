"""`python -m engine.train`: train a model folder (see engine.train.run)."""
from engine.train.run import main

main()
