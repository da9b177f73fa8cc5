# Read-only host check (run by kbuild before changing anything).
#
# Usage: preflight.sh DATA_ROOT
# Prints key=value lines: arch, uid, systemd, tools (found), missing
# (required but absent), free_kb and fstype of DATA_ROOT's nearest existing
# ancestor, data_root_exists.
set -u
dr=$1
echo "arch=$(uname -m)"
echo "uid=$(id -u)"
if [ -d /run/systemd/system ]; then echo "systemd=yes"; else echo "systemd=no"; fi
found="" missing=""
for t in sh tar sha256sum systemctl mount umount mkfifo tee mktemp find mknod grep cmp flock awk stat zstd gzip setfattr ssh systemd-run; do
    if command -v "$t" >/dev/null 2>&1; then found="$found $t"; else
        case $t in zstd|gzip|setfattr|ssh|systemd-run) ;; *) missing="$missing $t" ;; esac
    fi
done
echo "tools=${found# }"
echo "missing=${missing# }"
d=$dr
while [ ! -e "$d" ] && [ "$d" != "/" ]; do d=$(dirname "$d"); done
echo "free_kb=$(df -Pk "$d" | awk 'NR==2 {print $4}')"
echo "fstype=$(stat -f -c %T "$d")"
if [ -e "$dr" ]; then echo "data_root_exists=yes"; else echo "data_root_exists=no"; fi
if grep -q '^overlay ' /proc/filesystems 2>/dev/null || grep -q '	overlay$' /proc/filesystems 2>/dev/null; then
    echo "overlay=yes"
else
    echo "overlay=no"
fi
