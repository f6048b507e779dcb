pub fn run(_a: &crate::cli::PlotArgs) -> anyhow::Result<()> {
    todo!()
}
