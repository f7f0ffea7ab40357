# Unusual modes and owners that git cannot store.
mkdir -p tree/private tree/sticky tree/empty-dir tree/ro tree/owned
echo secret > tree/secret && chmod 0600 tree/secret
echo exec > tree/exec && chmod 0755 tree/exec
echo suid > tree/suid && chmod 4755 tree/suid
echo sgid > tree/sgid && chmod 2711 tree/sgid
echo none > tree/no-perms && chmod 0000 tree/no-perms
echo p > tree/private/p && chmod 0700 tree/private
chmod 1777 tree/sticky
chmod 2775 tree/empty-dir
: > tree/empty-file
echo ro > tree/ro/file && chmod 0444 tree/ro/file && chmod 0555 tree/ro
echo owned > tree/owned/f && chown -R 1234:5678 tree/owned
chmod 0750 tree
