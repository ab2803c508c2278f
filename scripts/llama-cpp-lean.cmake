# Read by CMake right after llama.cpp's own project() call (CMAKE_PROJECT_llama.cpp_INCLUDE):
# the Python bindings load libllama and libggml only. llama-cpp-python turns on llama.cpp's
# "common" library (chat parsers, an HTTP client) for its multimodal tools, which are not
# built here; leaving it out roughly halves the build.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
