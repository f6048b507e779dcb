pub fn run(_a: &crate::cli::CompareArgs) -> anyhow::Result<()> {
    todo!()
}
