def add(a, b):
    return a + b


def divide(a, b):
    return a / b


def factorial(n):
    result = 1
    for k in range(2, n + 1):
        result *= k
    return result
