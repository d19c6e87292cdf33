"""Task modules used by the config and CLI tests (tasks_package: tests.cli_tasks)."""
