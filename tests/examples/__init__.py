"""The examples of examples/, run as their READMEs say."""
