//! Host tensors: what crosses the runtime boundary (inputs, weights, outputs) and what the
//! reference interpreter computes on.

use crate::DType;

/// Element storage. Floats of every width are held as f32, integers as i64, so that math is
/// done once per kind; `Tensor::dtype` remembers the declared type.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// f32, f16 and bf16 values, widened to f32.
    F32(Vec<f32>),
    /// i32 and i64 values.
    I64(Vec<i64>),
    /// Booleans.
    Bool(Vec<bool>),
}

/// A dense row-major tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The declared element type.
    pub dtype: DType,
    /// Dims, outermost first.
    pub shape: Vec<usize>,
    /// The elements, `shape.iter().product()` of them.
    pub data: Data,
}

impl Tensor {
    /// A float tensor of dtype f32.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Tensor {
            dtype: DType::F32,
            shape,
            data: Data::F32(values),
        }
    }

    /// An integer tensor of the given integer dtype.
    pub fn int(dtype: DType, shape: Vec<usize>, values: Vec<i64>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Tensor {
            dtype,
            shape,
            data: Data::I64(values),
        }
    }

    /// A boolean tensor.
    pub fn bool(shape: Vec<usize>, values: Vec<bool>) -> Tensor {
        Tensor {
            dtype: DType::Bool,
            shape,
            data: Data::Bool(values),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements as f32 (integers and booleans converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::Bool(v) => v.iter().map(|&x| f32::from(u8::from(x))).collect(),
        }
    }
}
