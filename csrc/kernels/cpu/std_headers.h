// Standard headers used by the kernels, included by each kernels_<isa>.cpp
// BEFORE it switches the target instruction set, so that library code
// instantiated there keeps the baseline target (one definition for all
// builds) while the kernels themselves get the wider one.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <vector>
