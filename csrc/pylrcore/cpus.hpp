// How many threads a parallel loop of the core may usefully start: the CPUs this process may run
// on, i.e. its affinity mask (taskset, a container's or batch job's cpuset), not the machine's core
// count that std::thread::hardware_concurrency() reports. A process pinned to 2 of 64 cores that
// starts 64 threads only time-slices them. (A CFS quota, cgroup cpu.max, limits time, not CPUs,
// and is not seen here.)
#pragma once
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

namespace pylrcore {

inline unsigned available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? n : 1;
}

}  // namespace pylrcore
