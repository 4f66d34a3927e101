#pragma once
// A fresh empty directory for tests that write files, removed with
// everything in it at scope exit.

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace lowbit_test {

struct scratch_dir {
    std::filesystem::path path;

    /// <temp>/lowbit_<tag>_<pid>, emptied if a previous run left it behind.
    explicit scratch_dir(const std::string& tag)
        : path(std::filesystem::temp_directory_path() / ("lowbit_" + tag + "_" + std::to_string(::getpid()))) {
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;
    ~scratch_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }

    /// File names in the directory, sorted.
    std::vector<std::string> entries() const {
        std::vector<std::string> out;
        for (const auto& e : std::filesystem::directory_iterator(path)) out.push_back(e.path().filename().string());
        std::sort(out.begin(), out.end());
        return out;
    }
};

}  // namespace lowbit_test
