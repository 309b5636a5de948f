use hmr2_client::{producer, Layout};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HMR2_URL").unwrap_or("redis://127.0.0.1:6379".into());
    let images = hmr2_client::images_in(std::env::args().nth(1).unwrap_or("frames".into()))?;
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let (layout, opts) = (Layout::new("hmr2", 1, false), Default::default());
    let added = producer::add_video(&mut conn, &layout, "clip-7", images, 30.0, &opts).await?;
    let out = producer::wait_video(&mut conn, &added.output, "clip-7", std::time::Duration::MAX);
    for t in out.await?.ok_or("no output")?.done.tracks {
        println!("{t:?}"); // track_id, first_frame, last_frame, frames, interpolated_frames
    }
    Ok(())
}
