# CPU accounting from /proc, shared by pgbench.sh and sysbench.sh (`. bench/cpu.sh`; defines
# functions and TICK_US only).
# Ticks (user+system) process $1 has used so far; the machine's idle ticks, busy ticks without
# steal, and stolen ticks (time the hypervisor gave to other guests: a noisy neighbour makes
# every figure of a run lower); microseconds per tick.
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
