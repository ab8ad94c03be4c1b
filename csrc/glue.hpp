// The pybind11 glue both binding files share (csrc/bindings.cpp and csrc/cuda/bindings_cuda.cpp):
// how settings and states cross the boundary, and which error misuse raises. One copy, so the two
// modules cannot drift apart (they had: an unknown key was a TypeError in one, a ValueError in the
// other). Needs pybind11 and the core; the core never includes this.
//
// Settings and states cross as dicts keyed by the core's own field names (for_each_field), so the
// names are written once, in the core. A field that is itself a struct with for_each_field becomes a
// nested dict. Errors: an unknown key is a TypeError (like an unexpected keyword argument), a value
// of the wrong type or range and a missing key of a state are ValueErrors that name the key.
#pragma once
#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "pylrcore/common.hpp"
#include "pylrcore/step/guard.hpp"

namespace pylrcore::glue {

namespace py = pybind11;

// Whether T is a struct of fields (for_each_field(T&, f) exists, found by name lookup or ADL).
struct AnyField {
  template <class V>
  void operator()(const char*, V&) const {}
};
template <class T, class = void>
struct has_fields : std::false_type {};
template <class T>
struct has_fields<T, std::void_t<decltype(for_each_field(std::declval<T&>(), AnyField{}))>> : std::true_type {};

template <class Fields>
py::dict fields_to_dict(const Fields& fields);

template <class V>
py::object to_python(V& value) {
  if constexpr (has_fields<V>::value)
    return fields_to_dict(value);
  else
    return py::cast(value);
}

// By reference: a Suggestion carries two curves, which a copy would duplicate per call. The fields
// are only read (for_each_field takes a mutable reference because parsing writes through it).
template <class Fields>
py::dict fields_to_dict(const Fields& fields) {
  py::dict out;
  for_each_field(const_cast<Fields&>(fields), [&](const char* name, auto& value) { out[name] = to_python(value); });
  return out;
}

// Enums that have a code table (named_table(E), next to the enum) cross as plain ints or IntEnum
// members: checked against the table here, without pybind11's enum caster (~3.6 us per call, most
// of a short suggest()).
template <class V, class = void>
struct has_named_table : std::false_type {};
template <class V>
struct has_named_table<V, std::void_t<decltype(named_table(std::declval<V>()))>> : std::true_type {};

template <class E>
E enum_from_python(const py::handle& item, const std::string& what, const char* name) {
  if (PyLong_Check(item.ptr()) && !PyBool_Check(item.ptr())) {
    const long long code = PyLong_AsLongLong(item.ptr());
    if (code == -1 && PyErr_Occurred()) PyErr_Clear();
    else
      for (const auto& entry : named_table(E{}))
        if (static_cast<long long>(entry.value) == code) return entry.value;
  }
  std::string known;
  for (const auto& entry : named_table(E{})) known += std::string(known.empty() ? "" : ", ") + entry.name;
  throw py::value_error(what + ": '" + name + "' must be one of " + known + ", got " + std::string(py::repr(item)));
}

// Settings may leave keys out (they keep the values of `fields`, the defaults); a state must have
// every key (a checkpoint missing one is not resumed from defaults).
enum class Keys { Some, All };

template <class Fields>
Fields fields_from_dict(const py::handle& values_obj, const std::string& what, Fields fields = Fields{},
                        Keys keys = Keys::Some) {
  if (!py::isinstance<py::dict>(values_obj))
    throw py::value_error(what + " must be a dict, got " +
                          std::string(py::str(py::type::of(values_obj).attr("__name__"))));
  const py::dict values = py::reinterpret_borrow<py::dict>(values_obj);
  std::size_t used = 0;
  for_each_field(fields, [&](const char* name, auto& value) {
    using V = std::decay_t<decltype(value)>;
    PyObject* found = PyDict_GetItemString(values.ptr(), name);  // one lookup (borrowed), no error set
    if (found == nullptr) {
      if (keys == Keys::All) throw py::value_error(what + ": missing '" + name + "'");
      return;
    }
    const py::object item = py::reinterpret_borrow<py::object>(found);
    if constexpr (has_fields<V>::value) {
      value = fields_from_dict<V>(item, what + "['" + name + "']", value, keys);
    } else if constexpr (has_named_table<V>::value) {
      value = enum_from_python<V>(item, what, name);
    } else {
      try {
        value = item.template cast<V>();
      } catch (const py::cast_error&) {
        throw py::value_error(what + ": '" + name + "' has the wrong type or range: " + std::string(py::repr(item)));
      }
    }
    ++used;
  });
  if (used != values.size()) {
    for (const auto& item : values) {
      bool known = false;
      const std::string key = py::str(item.first);
      for_each_field(fields, [&](const char* name, auto&) { known = known || key == name; });
      if (!known)
        throw py::type_error(what + ": unknown " + (keys == Keys::All ? "key" : "setting") + " '" + key + "'");
    }
  }
  return fields;
}

// A code table of the core (Named entries) as a native Python enum (base: "enum.IntEnum" or
// "enum.IntFlag").
template <class E, std::size_t N>
void export_enum(py::module_& m, const char* name, const char* base, const Named<E> (&table)[N], const char* doc) {
  py::native_enum<E> e(m, name, base, doc);
  for (const Named<E>& v : table) e.value(v.name, v.value);
  e.finalize();
}

// group[key] = values[i] for a list of param-group dicts, in one call (the per-step write of a
// Scheduler with float lrs; a Python loop over 100 groups costs more than everything else). With
// skip_nan a NaN leaves its group alone.
inline void set_group_floats(const py::list& groups, PyObject* key, const py::array_t<double, py::array::c_style>& values,
                             bool skip_nan) {
  if (static_cast<py::ssize_t>(groups.size()) > values.size()) throw py::value_error("one value per param group is needed");
  const double* v = values.data();
  for (std::size_t i = 0; i < groups.size(); ++i) {
    if (skip_nan && std::isnan(v[i])) continue;
    PyObject* group = PyList_GET_ITEM(groups.ptr(), static_cast<Py_ssize_t>(i));
    if (!PyDict_Check(group)) throw py::type_error("param groups must be dicts");
    PyObject* value = PyFloat_FromDouble(v[i]);
    const int rc = value ? PyDict_SetItem(group, key, value) : -1;
    Py_XDECREF(value);
    if (rc != 0) throw py::error_already_set();
  }
}

// ---- the guard's settings, shared by GuardCore (bindings.cpp) and DeviceGuard (bindings_cuda.cpp)

inline GuardPolicy guard_policy(const std::vector<int>& actions, std::int64_t max_consecutive_skips) {
  if (actions.size() != static_cast<std::size_t>(kGuardEventKinds))
    throw py::value_error("policy: expected " + std::to_string(kGuardEventKinds) + " action codes");
  GuardPolicy p;
  for (std::size_t i = 0; i < actions.size(); ++i) {
    if (actions[i] < 0 || actions[i] > static_cast<int>(GuardAction::Raise))
      throw py::value_error("policy: unknown action code " + std::to_string(actions[i]));
    p.action[i] = static_cast<GuardAction>(actions[i]);
  }
  p.max_consecutive_skips = max_consecutive_skips;
  return p;
}

inline GuardConfig guard_config(const py::dict& loss, const py::dict& norm, const std::vector<int>& actions,
                                std::int64_t max_consecutive_skips) {
  return pylrcore::guard_config(fields_from_dict<DetectorConfig>(loss, "loss detector"),
                                fields_from_dict<DetectorConfig>(norm, "norm detector"),
                                guard_policy(actions, max_consecutive_skips));
}

// A GuardCore state dict (GuardCore._get_state()); None: a fresh guard. Validated.
inline GuardState guard_state(const py::handle& state) {
  if (state.is_none()) return fresh_guard_state();
  GuardState s = fields_from_dict<GuardState>(state, "state", fresh_guard_state(), Keys::All);
  validate(s);
  return s;
}

inline py::tuple decision_tuple(const GuardDecision& d) {
  return py::make_tuple(d.step, d.events, static_cast<int>(d.action), d.consecutive_skips, d.loss_z, d.smoothed,
                        d.explode_at, d.grad_norm, d.norm_z);
}

// Tables of tensors as (address, count, dtype code) columns: one length check, one message.
inline void require_same_length(const char* names, std::size_t a, std::size_t b, std::size_t c) {
  if (a != b || a != c)
    throw py::value_error(std::string(names) + " must have the same length, got " + std::to_string(a) + ", " +
                          std::to_string(b) + " and " + std::to_string(c));
}

}  // namespace pylrcore::glue
