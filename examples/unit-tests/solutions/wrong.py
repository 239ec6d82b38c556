def add(a, b):
    return a + b


def divide(a, b):
    # Wrong: integer division, and no error for zero.
    return a // b if b else 0


def factorial(n):
    # Wrong: factorial(0) is 1.
    result = n
    for k in range(2, n):
        result *= k
    return result
