# Shell functions shared by bench/scale.sh and bench/scripts/*.sh (source it; it runs nothing).
# They read the globals ADMIN_PORT (the server's admin listener) and, where named, a PID.

# metric NAME: the server's /metrics value of NAME, summed over its labels (0 if absent).
metric() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

# median: the median of the numbers on stdin, one a line (the lower middle of an even count).
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# status_kib PID FIELD: a /proc/PID/status field in KiB (VmRSS, RssAnon, RssFile, ...).
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# smaps_classes PID: the process's resident memory by kind of mapping, one `class rss_kib
# mappings` line per class, from /proc/PID/smaps:
#   ring_sq_cq    io_uring SQ and CQ rings (mmap offset 0 / 0x8000000 of an io_uring fd)
#   ring_sqes     io_uring submission entries (offset 0x10000000)
#   anon_large    anonymous mappings of 4 MiB or more (mimalloc arenas and segments)
#   anon_small    smaller anonymous mappings (buffer-ring descriptors, thread stacks' guards...)
#   brk_heap      [heap] (libc malloc of C code)
#   stack         [stack] and thread stacks glibc names
#   file          file-backed mappings (the binary, libraries)
#   other         anything else (vdso, vvar, other anon_inode mappings)
smaps_classes() {
    awk '
        /^[0-9a-f]+-[0-9a-f]+ / { path = $6; offset = $3; next }
        $1 == "Size:" {
            if (path ~ /io_uring/) class = (offset == "10000000") ? "ring_sqes" : "ring_sq_cq"
            else if (path == "") class = ($2 >= 4096) ? "anon_large" : "anon_small"
            else if (path == "[heap]") class = "brk_heap"
            else if (path ~ /^\[stack/) class = "stack"
            else if (path ~ /^\//) class = "file"
            else class = "other"
            maps[class]++
        }
        $1 == "Rss:" { rss[class] += $2 }
        END { for (c in maps) printf "%s %d %d\n", c, rss[c], maps[c] }
    ' "/proc/$1/smaps" | sort
}

# The processes a script starts: `server` (its holdfast serve pid) and `bench` (the process
# group of its holdfast-bench workers). `trap cleanup EXIT` kills whatever is still running.
server=""
bench=""
cleanup() {
    [ -n "$bench" ] && kill -- -"$bench" 2>/dev/null || true
    [ -n "$server" ] && kill -9 "$server" 2>/dev/null || true
}
