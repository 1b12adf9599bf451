// What every C++ test here shares: the failure count, `expect`, and the view of an
// energy held in vectors.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/params.h"

namespace structinf {
namespace test {

// Failed checks so far; main() returns non-zero when any failed.
inline int failures = 0;

// Records a failed check (the first 40 are printed, so a broken kernel cannot
// flood the log).
inline void expect(bool ok, const std::string& what) {
  if (ok) return;
  if (failures < 40) std::printf("  FAIL: %s\n", what.c_str());
  ++failures;
}

// The kernels' view of an energy whose arrays live in vectors (`allowed` empty: no mask).
template <typename S>
EnergyView<S> energy_view(int64_t B, int64_t T, int64_t L, const std::vector<S>& em,
                          const std::vector<S>& tr, const std::vector<S>& st,
                          const std::vector<S>& en, const std::vector<int64_t>& len,
                          const std::vector<char>& allowed = {}) {
  EnergyView<S> v;
  v.B = B;
  v.T = T;
  v.L = L;
  v.emissions = em.data();
  v.transitions = tr.data();
  v.start = st.data();
  v.end = en.data();
  v.lengths = len.data();
  v.allowed = allowed.empty() ? nullptr : reinterpret_cast<const bool*>(allowed.data());
  return v;
}

}  // namespace test
}  // namespace structinf
