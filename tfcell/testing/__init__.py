"""Test helpers for tfcell and for code built on it."""

from tfcell.testing.test_case import TestCase, Tolerance, tolerance, two_cpu_strategy
