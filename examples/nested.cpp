// Tasks that call tasks: return the refs of nested calls, or wait for them and return their values.
#include <weft/weft.hpp>

#include <cstdio>
#include <vector>

int f() { return 1; }

// Starts f four times and hands back the four refs, without waiting for any of them.
std::vector<weft::object_ref<int>> g() {
  const auto f_r = weft::remote(f);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 4; ++i)
    refs.push_back(f_r.remote());
  return refs;
}

// Starts f four times, waits for all four (its CPU is lent out meanwhile) and returns the values.
std::vector<int> h() {
  const auto f_r = weft::remote(f);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 4; ++i)
    refs.push_back(f_r.remote());
  return weft::get(refs);
}

int main(int argc, char** argv) {
  weft::init(argc, argv);

  std::printf("g() returned refs:");
  const std::vector<weft::object_ref<int>> refs = weft::get(weft::remote(g).remote());
  for (const auto& r : refs)
    std::printf(" %s", weft::to_string(r.id()).c_str());
  std::printf("\n");
  // The refs stay usable after g finished: they keep their objects alive.
  std::printf("their values:");
  for (int v : weft::get(refs))
    std::printf(" %d", v);
  std::printf("\n");

  std::printf("h() returned values:");
  for (int v : weft::get(weft::remote(h).remote()))
    std::printf(" %d", v);
  std::printf("\n");

  weft::shutdown();
}
