"""The machinery of scripts/multi_turn_finetuning.py, one module per concern (README.md: "Where things are")."""
