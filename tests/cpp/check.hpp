// A deliberately tiny test harness for the header-only core: TEST(name) registers a case,
// CHECK / CHECK_CLOSE / CHECK_THROWS / CHECK_THROWS_WITH report the failing expression with file:line.
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace check {

struct Case {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
inline int& failures() {
  static int n = 0;
  return n;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};
inline void report(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
  ++failures();
}
inline bool close(double a, double b, double rel, double abs_tol = 0.0) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (a == b) return true;
  return std::fabs(a - b) <= abs_tol + rel * std::fmax(std::fabs(a), std::fabs(b));
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)
#define TEST(name)                                                                       \
  static void name();                                                                    \
  static ::check::Register CHECK_CAT(register_, name)(#name, name);                      \
  static void name()
#define CHECK(expr) \
  do { if (!(expr)) ::check::report(__FILE__, __LINE__, #expr); } while (0)
#define CHECK_CLOSE(a, b, rel)                                                                   \
  do {                                                                                           \
    double check_a_ = (a), check_b_ = (b);                                                       \
    if (!::check::close(check_a_, check_b_, (rel)))                                              \
      ::check::report(__FILE__, __LINE__, std::string(#a " ~= " #b ": ") + std::to_string(check_a_) + \
                                              " vs " + std::to_string(check_b_));                \
  } while (0)
#define CHECK_THROWS(expr, Exception)                                              \
  do {                                                                             \
    bool check_threw_ = false;                                                     \
    try { (void)(expr); } catch (const Exception&) { check_threw_ = true; }        \
    if (!check_threw_) ::check::report(__FILE__, __LINE__, "no " #Exception " from " #expr); \
  } while (0)
// As CHECK_THROWS, and the message must contain `text` (misuse messages name the argument).
#define CHECK_THROWS_WITH(expr, Exception, text)                                           \
  do {                                                                                     \
    std::string check_what_ = "(nothing thrown)";                                          \
    try { (void)(expr); } catch (const Exception& e) { check_what_ = e.what(); }           \
    if (check_what_.find(text) == std::string::npos)                                       \
      ::check::report(__FILE__, __LINE__, "no " #Exception " with '" + std::string(text) + \
                                              "' from " #expr ": " + check_what_);         \
  } while (0)
