"""Placeholder: being written."""


def add_args(parser):
    pass
