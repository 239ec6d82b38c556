import unittest

import calc


class AddTest(unittest.TestCase):
    def test_small(self):
        self.assertEqual(calc.add(2, 3), 5)

    def test_negative(self):
        self.assertEqual(calc.add(-2, -3), -5)


class DivideTest(unittest.TestCase):
    def test_exact(self):
        self.assertEqual(calc.divide(6, 3), 2)

    def test_by_zero(self):
        with self.assertRaises(ZeroDivisionError):
            calc.divide(1, 0)


class FactorialTest(unittest.TestCase):
    def test_zero(self):
        self.assertEqual(calc.factorial(0), 1)

    def test_five(self):
        self.assertEqual(calc.factorial(5), 120)
