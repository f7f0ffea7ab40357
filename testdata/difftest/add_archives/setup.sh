# Archives made here, so their bytes and owners are known: a tree with a root entry of mode
# 0750, a file owned 1234:5678, a 0600 file, a symlink, an empty dir.
mkdir -p payload/sub payload/empty
echo one > payload/one
echo two > payload/sub/two
chmod 0600 payload/sub/two
ln -s one payload/link
chown 1234:5678 payload/one
chmod 0750 payload
tar --numeric-owner -cf plain.tar -C payload .
tar --numeric-owner -czf gz.tar.gz -C payload .
tar --numeric-owner -cjf bz.tar.bz2 -C payload .
tar --numeric-owner -cJf xz.tar.xz -C payload .
tar --numeric-owner -cf nodot.tar -C payload one sub
rm -rf payload
echo "not an archive" > fake.tar.gz
gzip -c notes.txt > notes.txt.gz
