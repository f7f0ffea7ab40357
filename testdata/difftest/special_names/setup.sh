# Names git or tar make awkward: spaces, unicode, a 150-char name, a deep long path, a leading
# dash, an empty file and an empty dir.
echo space > "with space.txt"
echo unicode > "héllo-ünïcode.txt"
long=$(printf 'n%.0s' $(seq 1 150))
echo long > "$long"
deep=a-fairly-long-directory-name/another-fairly-long-directory-name/yet-another-long-directory-name/and-one-more-long-directory-name
mkdir -p "$deep"
echo deep > "$deep/a-file-with-a-long-name-at-the-end-of-a-long-path.txt"
echo dash > ./-leading-dash
: > empty
mkdir empty-dir
