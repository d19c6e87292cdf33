"""A module with neither run() nor a BaseTask: config must refuse it."""

VALUE = 1
