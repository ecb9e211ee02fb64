// Heap allocations counted by the replaced global operator new of count_allocations.cpp, so that
// a test can check "allocates nothing" instead of assuming it. Only a program linked with the
// daa_count_allocations object library (tests/CMakeLists.txt) has the counting operator new.
#pragma once

namespace daa::test {

// Calls of the global operator new so far in this process.
long allocation_count();

}  // namespace daa::test
