#include <cstdio>
#include <cstring>

#include "check.hpp"

// Runs every registered case, or those whose name contains argv[1]; ends with "N passed, N failed".
int main(int argc, char** argv) {
  int passed = 0, failed = 0;
  for (const auto& c : check::registry()) {
    if (argc > 1 && std::strstr(c.name, argv[1]) == nullptr) continue;
    const int before = check::failures();
    c.fn();
    const bool ok = check::failures() == before;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", c.name);
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}
