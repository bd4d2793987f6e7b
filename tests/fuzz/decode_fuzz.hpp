// What decode_fuzz.cpp offers its drivers (libFuzzer, and replay_main.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

/// Decodes one input; aborts on anything but success or serialization_error.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

/// Valid inputs for the corpus, one per message kind: (file name, bytes).
std::vector<std::pair<std::string, std::vector<std::byte>>> decode_fuzz_seeds();
