"""The `voxelpipe` command line: the composition root for people at a terminal.

`demo` and `serve` run the local cloud (only this package imports it); the other commands talk to a
deployment's API (`client`) or, for operators, to AWS (`admin`). The Lambda layer does not carry it.
"""
