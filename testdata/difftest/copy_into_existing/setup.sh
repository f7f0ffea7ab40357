# A directory whose mode differs from the existing destination's.
mkdir -p etcdir dir700
echo extra > etcdir/extra.conf
chmod 0750 etcdir
echo in > dir700/in.txt
chmod 0700 dir700
chmod 0755 tool
