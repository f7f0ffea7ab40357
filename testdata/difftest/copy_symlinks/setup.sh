# Symlinks in the context: relative, absolute, dangling, to a directory, pointing upwards.
echo target > target.txt
ln -s target.txt rel-link
ln -s /etc/passwd abs-link
ln -s does-not-exist dangling
mkdir -p dir/inner nested
echo in-dir > dir/file
echo inner > dir/inner/deep
ln -s dir dirlink
ln -s ../target.txt nested/up
ln -s inner dir/inner-link
