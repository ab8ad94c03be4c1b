#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

#include "check.hpp"
#include "pylrcore/cpus.hpp"

using namespace pylrcore;

TEST(available_cpus_is_the_affinity_mask_not_the_machine) {
  const unsigned all = available_cpus();
  CHECK(all >= 1);
#if defined(__linux__)
  // sched_{get,set}affinity(0, ...) act on the calling thread: pin it to one of its CPUs, then restore.
  cpu_set_t before;
  CHECK(sched_getaffinity(0, sizeof before, &before) == 0);
  int first = 0;
  while (!CPU_ISSET(first, &before)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  CHECK(sched_setaffinity(0, sizeof one, &one) == 0);
  const unsigned pinned = available_cpus();
  CHECK(sched_setaffinity(0, sizeof before, &before) == 0);
  CHECK(pinned == 1);
  CHECK(available_cpus() == all);
#endif
}
