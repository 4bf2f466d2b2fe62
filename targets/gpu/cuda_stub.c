/* A stand-in for the NVIDIA driver library (libcuda.so.1) on machines without one.
 *
 * TVM's CUDA runtime library links against libcuda.so.1; loading it while building lets TVM hand
 * the generated CUDA to nvcc at build time (see toolchain.py). Building never calls the driver:
 * every function here answers CUDA_ERROR_NO_DEVICE, so anything that tries to use a GPU through
 * this stand-in fails plainly. It is never shipped with an artifact. */
#include <stddef.h>

typedef int CUresult;

/* Marks this library as the stand-in (toolchain.driver_available tells it from the real driver). */
int accelopt_cuda_driver_stub = 1;
#define CUDA_SUCCESS 0
#define CUDA_ERROR_NO_DEVICE 100

CUresult cuInit(unsigned int flags) { (void)flags; return CUDA_ERROR_NO_DEVICE; }
CUresult cuDeviceGetCount(int *count) { if (count) *count = 0; return CUDA_ERROR_NO_DEVICE; }
CUresult cuDriverGetVersion(int *version) { if (version) *version = 0; return CUDA_ERROR_NO_DEVICE; }
CUresult cuDeviceGetName(char *name, int len, int dev) {
  (void)dev;
  if (name && len > 0) name[0] = '\0';
  return CUDA_ERROR_NO_DEVICE;
}
CUresult cuGetErrorName(CUresult error, const char **str) {
  if (str) *str = error == CUDA_ERROR_NO_DEVICE ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_UNKNOWN";
  return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult error, const char **str) {
  if (str) *str = error == CUDA_ERROR_NO_DEVICE ? "no CUDA-capable device is detected" : "unknown error";
  return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(void *func, int attrib, int value) {
  (void)func; (void)attrib; (void)value;
  return CUDA_ERROR_NO_DEVICE;
}
CUresult cuLaunchKernelEx(const void *config, void *func, void **params, void **extra) {
  (void)config; (void)func; (void)params; (void)extra;
  return CUDA_ERROR_NO_DEVICE;
}
CUresult cuModuleGetFunction(void **func, void *module, const char *name) {
  (void)module; (void)name;
  if (func) *func = NULL;
  return CUDA_ERROR_NO_DEVICE;
}
CUresult cuModuleLoadData(void **module, const void *image) {
  (void)image;
  if (module) *module = NULL;
  return CUDA_ERROR_NO_DEVICE;
}
CUresult cuModuleUnload(void *module) { (void)module; return CUDA_ERROR_NO_DEVICE; }
CUresult cuTensorMapEncodeTiled(void *tensor_map, ...) { (void)tensor_map; return CUDA_ERROR_NO_DEVICE; }
