"""spc_train: persona-grounded conversation datasets with the Generator-Critic loop of Synthetic-Persona-Chat."""

__version__ = "0.1.0"
