# Wrong: a difference, not a sum.
a, b = map(int, input().split())
print(a - b)
