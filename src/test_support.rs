//! Test support, not part of the worker's API: a model stand-in for the model seam
//! ([`crate::run_with`]), shared by the integration tests and the crate's own unit tests, and
//! the queue protocol's types ([`Queue`], [`Shard`], [`Entry`]) for tests that drive a step of
//! the protocol against a real redis-server without a whole worker. It is
//! public only so that `tests/` can reach it, hidden from the documentation, and nothing in the
//! worker uses it.
//!
//! A stand-in is for what no real model file can be made to do on demand on a test machine:
//! run out of memory at a chosen batch size, hang until released, trace each output to its
//! crop. Everything else should go through the tiny TorchScript model.
//!
//! See the unit tests below for a stand-in put together from each part.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

pub use crate::queue::{Entry, Queue, Shard};

use crate::error::ModelError;
use crate::model::{BatchOutput, Model, ModelMeta};

type Forward = Box<dyn FnMut(&[u8], usize, bool) -> Result<BatchOutput, ModelError> + Send>;
type When = Box<dyn FnMut(&[u8], usize) -> bool + Send>;

/// A [`Model`] built from parts: every forward pass is noted ([`StandIn::batches`]), fails out
/// of memory above a size ([`StandIn::fits`]), may block until released
/// ([`StandIn::hang_when`]), then answers with [`StandIn::on_forward`] (by default
/// [`StandIn::output`]), in that order.
pub struct StandIn {
    meta: ModelMeta,
    device: String,
    cuda: Option<usize>,
    fits: Option<usize>,
    batches: Option<Batches>,
    hang: Option<(When, Receiver<()>)>,
    forward: Forward,
}

/// The size of every forward pass a stand-in was given, in order; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct Batches(Arc<Mutex<Vec<usize>>>);

impl Batches {
    /// Every forward pass's number of crops so far, in order.
    pub fn sizes(&self) -> Vec<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The largest forward pass so far (0 before the first).
    pub fn largest(&self) -> usize {
        self.sizes().into_iter().max().unwrap_or(0)
    }

    fn push(&self, n: usize) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(n);
    }
}

impl Default for StandIn {
    fn default() -> Self {
        Self::new()
    }
}

impl StandIn {
    /// Named `stand-in` (its `meta()` name and device label), on no GPU, answering every crop
    /// with [`StandIn::output`].
    pub fn new() -> Self {
        StandIn {
            meta: meta("stand-in"),
            device: "stand-in".into(),
            cuda: None,
            fits: None,
            batches: None,
            hang: None,
            forward: Box::new(|_, n, _| Ok(StandIn::output(n))),
        }
    }

    /// Around a real model: its `meta()`, device label and CUDA index, and its forward passes
    /// unless [`StandIn::on_forward`] replaces them.
    pub fn around(mut model: impl Model + Send + 'static) -> Self {
        StandIn {
            meta: model.meta().clone(),
            device: model.device_label(),
            cuda: model.cuda_index(),
            ..StandIn::new()
        }
        .on_forward(move |crops, n, vertices| model.forward(crops, n, vertices))
    }

    /// Its `meta()` name and its device label.
    pub fn named(mut self, name: &str) -> Self {
        self.meta = meta(name);
        self.device = name.into();
        self
    }

    /// A forward pass of more than `max` crops fails with [`ModelError::OutOfMemory`] before
    /// anything else runs.
    pub fn fits(mut self, max: usize) -> Self {
        self.fits = Some(max);
        self
    }

    /// Notes the size of every forward pass in `batches`, those that then fail included.
    pub fn batches(mut self, batches: &Batches) -> Self {
        self.batches = Some(batches.clone());
        self
    }

    /// A forward pass for which `when(crops, n)` holds blocks until `release` receives a
    /// message or its sender is dropped (so a test that fails never leaves it blocked), then
    /// answers as usual. A hung device, or a warm-up the test holds back.
    pub fn hang_when(
        mut self,
        when: impl FnMut(&[u8], usize) -> bool + Send + 'static,
        release: Receiver<()>,
    ) -> Self {
        self.hang = Some((Box::new(when), release));
        self
    }

    /// Answers forward passes with `forward(crops, n, vertices)`: it may fail, panic or block.
    pub fn on_forward(
        mut self,
        forward: impl FnMut(&[u8], usize, bool) -> Result<BatchOutput, ModelError> + Send + 'static,
    ) -> Self {
        self.forward = Box::new(forward);
        self
    }

    /// The default answer for `n` crops: `pred_cam` `(1, 0, 0)` (a person filling the crop),
    /// every other output zero, no vertices.
    pub fn output(n: usize) -> BatchOutput {
        BatchOutput {
            pred_cam: [1.0, 0.0, 0.0].repeat(n),
            ..BatchOutput::zeros(n)
        }
    }

    /// The `n` crops of a forward pass, one slice each.
    pub fn crops(crops: &[u8], n: usize) -> std::slice::ChunksExact<'_, u8> {
        crops.chunks_exact(crops.len() / n.max(1))
    }
}

impl Model for StandIn {
    fn forward(
        &mut self,
        crops: &[u8],
        n: usize,
        vertices: bool,
    ) -> Result<BatchOutput, ModelError> {
        if let Some(b) = &self.batches {
            b.push(n);
        }
        if let Some(max) = self.fits.filter(|&max| n > max) {
            return Err(ModelError::OutOfMemory(format!(
                "{n} crops do not fit (at most {max})"
            )));
        }
        if let Some((when, release)) = &mut self.hang {
            if when(crops, n) {
                let _ = release.recv();
            }
        }
        (self.forward)(crops, n, vertices)
    }

    fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    fn device_label(&self) -> String {
        self.device.clone()
    }

    fn cuda_index(&self) -> Option<usize> {
        self.cuda
    }
}

/// A `meta()` named `name` that meets the worker's contract.
fn meta(name: &str) -> ModelMeta {
    let outputs: serde_json::Map<String, serde_json::Value> = crate::model::REQUIRED_OUTPUTS
        .iter()
        .map(|k| (k.to_string(), serde_json::json!([])))
        .collect();
    let raw = serde_json::json!({
        "name": name,
        "input_size": [crate::image::CROP, crate::image::CROP],
        "outputs": outputs,
    });
    ModelMeta::parse(&raw.to_string()).expect("a stand-in's meta() meets the contract")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::CROP_BYTES;

    #[test]
    fn a_stand_in_notes_sizes_runs_out_of_memory_and_answers_in_order() {
        let batches = Batches::default();
        let mut m = StandIn::new()
            .fits(2)
            .batches(&batches)
            .on_forward(|crops, n, _| {
                let mut o = StandIn::output(n);
                o.pred_cam = StandIn::crops(crops, n)
                    .flat_map(|c| [c[0] as f32, 0.0, 0.0])
                    .collect();
                Ok(o)
            });
        let mut crops = vec![0u8; 2 * CROP_BYTES];
        crops[CROP_BYTES] = 7;
        assert!(matches!(
            m.forward(&vec![0; 3 * CROP_BYTES], 3, false),
            Err(ModelError::OutOfMemory(_))
        ));
        let o = m.forward(&crops, 2, false).unwrap();
        assert_eq!(o.pred_cam, [0.0, 0.0, 0.0, 7.0, 0.0, 0.0]);
        assert_eq!(batches.sizes(), [3, 2]);
        assert_eq!(batches.largest(), 3);
        assert_eq!(m.meta().label(), "stand-in");
        assert_eq!(
            (m.device_label().as_str(), m.cuda_index()),
            ("stand-in", None)
        );
    }

    #[test]
    fn a_hung_pass_waits_for_its_release_or_its_sender_gone() {
        let (release, hung) = std::sync::mpsc::channel();
        let mut m = StandIn::new()
            .named("fake")
            .hang_when(|c, _| c[0] == 1, hung);
        let (done_tx, done) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            assert_eq!(m.forward(&vec![0; CROP_BYTES], 1, false).unwrap().n, 1);
            done_tx.send("not held").unwrap();
            assert_eq!(m.forward(&vec![1; CROP_BYTES], 1, false).unwrap().n, 1);
            done_tx.send("released").unwrap();
            assert_eq!(m.forward(&vec![1; CROP_BYTES], 1, false).unwrap().n, 1);
            done_tx.send("sender gone").unwrap();
            m.meta().name.clone()
        });
        assert_eq!(done.recv().unwrap(), "not held");
        assert!(done.try_recv().is_err(), "held until released");
        release.send(()).unwrap();
        assert_eq!(done.recv().unwrap(), "released");
        drop(release);
        assert_eq!(done.recv().unwrap(), "sender gone");
        assert_eq!(t.join().unwrap(), "fake");
    }
}
