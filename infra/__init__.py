"""The AWS CDK app that deploys the pipeline."""
