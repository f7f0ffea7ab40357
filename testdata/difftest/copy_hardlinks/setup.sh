# Hardlinks in the context (git cannot store them).
echo data > a
ln a b
mkdir d
ln a d/c
echo two > x
ln x y
